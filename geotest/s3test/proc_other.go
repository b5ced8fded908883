//go:build !linux

package s3test

import (
	"os"
	"syscall"
)

// stopSignal asks the gateway to exit.
func stopSignal() os.Signal { return os.Interrupt }

// sysProcAttr has nothing to set outside Linux.
func sysProcAttr() *syscall.SysProcAttr { return nil }
