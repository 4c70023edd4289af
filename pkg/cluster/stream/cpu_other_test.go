//go:build !unix

package stream

import "time"

// processCPU is unknown here.
func processCPU() time.Duration { return 0 }
