//go:build unix

package gossip

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort lets several processes on one host bind the beacon port. Linux
// delivers each broadcast or multicast datagram to every such socket, but
// load-balances unicast datagrams across them by source address.
func reusePort(_, _ string, c syscall.RawConn) error {
	var opErr error
	err := c.Control(func(fd uintptr) {
		if opErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); opErr != nil {
			return
		}
		opErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return opErr
}
