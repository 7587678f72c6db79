//go:build !linux

package thp

func preferForHeap(int) {}
