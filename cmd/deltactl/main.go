// Command deltactl is the release engineer's and site admin's tool for layer
// deltas. This first version only reports its version; the delta commands
// arrive with the delta issue.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/registry-edge/registry-edge/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "version" || args[0] == "--version") {
		fmt.Fprintf(stdout, "deltactl %s\n", version.String())
		return 0
	}
	fmt.Fprintln(stderr, "usage: deltactl version   (delta commands are not implemented yet)")
	return 2
}
