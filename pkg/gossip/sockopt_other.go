//go:build !unix

package gossip

import "syscall"

// reusePort is a no-op where SO_REUSEPORT does not exist: one node per host.
func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
