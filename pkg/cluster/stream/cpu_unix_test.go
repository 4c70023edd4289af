//go:build unix

package stream

import (
	"syscall"
	"time"
)

// processCPU is the user and system CPU time this process has used, both
// ends of a benchmark included; 0 when unknown.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
