//go:build !unix

package meta

// removeTornInit is removeTornInit of torn_unix.go; without flock, a file
// that may be another process's is left alone.
func removeTornInit(string) error { return nil }
