package e2e

import "syscall"

// sysProcAttr makes a child process die with the test binary, so that a
// test killed by -timeout leaves no server behind on its port.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
