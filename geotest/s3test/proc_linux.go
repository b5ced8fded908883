package s3test

import (
	"os"
	"syscall"
)

// stopSignal asks the gateway to exit.
func stopSignal() os.Signal { return syscall.SIGTERM }

// sysProcAttr kills the gateway when the test process dies, so a crashed
// test binary leaves no gateway behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
