package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat. It is 100
// on every mainstream Linux build; reading it properly needs sysconf (cgo).
const clockTicks = 100

// procSample is the CPU time and resident memory of one or more processes
// (summed, so a cluster of local server processes can be measured together).
type procSample struct {
	CPU    time.Duration
	RSS    uint64          // bytes
	PerPID []time.Duration // CPU of each process, in the order given
}

func sampleProcs(pids []int) (procSample, error) {
	var s procSample
	for _, pid := range pids {
		cpu, err := procCPU(pid)
		if err != nil {
			return s, err
		}
		rss, err := procRSS(pid)
		if err != nil {
			return s, err
		}
		s.CPU += cpu
		s.RSS += rss
		s.PerPID = append(s.PerPID, cpu)
	}
	return s, nil
}

// procCPU reads utime+stime from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces, so
	// count fields from the last ')': state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// procRSS reads VmRSS from /proc/PID/status.
func procRSS(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: bad VmRSS %q", pid, line)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// selfUsage is this process's own CPU time and peak RSS.
type selfUsage struct {
	User, Sys time.Duration
	MaxRSS    uint64 // bytes
}

func getSelfUsage() selfUsage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return selfUsage{}
	}
	return selfUsage{
		User:   time.Duration(ru.Utime.Nano()),
		Sys:    time.Duration(ru.Stime.Nano()),
		MaxRSS: uint64(ru.Maxrss) * 1024, // Linux reports kilobytes
	}
}

// raiseNoFile lifts the soft open-file limit to the hard limit and returns the
// resulting soft limit.
func raiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return rl.Cur, nil
}

// localPortRange returns how many ephemeral ports the kernel hands out, which
// bounds the connections to one server address (0 if unknown).
func localPortRange() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0
	}
	return hi - lo + 1
}
