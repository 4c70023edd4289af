package pusher

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Memory is the process's memory use against what it may use.
type Memory struct {
	Used    uint64  `json:"used"`
	Total   uint64  `json:"total"`
	Percent float64 `json:"percent"`
}

// ReadMemory measures resident memory against the cgroup limit, or the
// machine's memory when there is none.
func ReadMemory() Memory {
	var used uint64
	if rss, ok := readStatusKB("/proc/self/status", "VmRSS:"); ok {
		used = rss * 1024
	} else {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		used = ms.Sys
	}
	total := cgroupLimit()
	if total == 0 {
		if kb, ok := readStatusKB("/proc/meminfo", "MemTotal:"); ok {
			total = kb * 1024
		}
	}
	m := Memory{Used: used, Total: total}
	if total > 0 {
		m.Percent = float64(used) / float64(total) * 100
	}
	return m
}

func readStatusKB(path, key string) (uint64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, key) {
			fields := strings.Fields(line[len(key):])
			if len(fields) > 0 {
				n, err := strconv.ParseUint(fields[0], 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}

func cgroupLimit() uint64 {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0
	}
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}
