package main

import (
	"io"
	"testing"
)

func TestAllowedHost(t *testing.T) {
	for h, want := range map[string]bool{
		"127.0.0.1":      true,
		"127.1.2.3":      true,
		"::1":            true,
		"localhost":      true,
		"LocalHost":      true,
		"198.18.0.1":     true,
		"198.19.255.1":   true,
		"198.20.0.1":     false,
		"10.0.0.1":       false,
		"0.0.0.0":        false,
		"example.com":    false,
		"localhost.com":  false,
		"::ffff:8.8.8.8": false,
	} {
		if got := allowedHost(h); got != want {
			t.Errorf("allowedHost(%q) = %v, want %v", h, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-urls", "ws://127.0.0.1:6001/, 127.0.0.2:6002,[::1]:7000,localhost", "-rate", "0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1:6001", "127.0.0.2:6002", "[::1]:7000", "localhost:6001"}
	if len(c.targets) != len(want) {
		t.Fatalf("targets = %v", c.targets)
	}
	for i := range want {
		if c.targets[i] != want[i] {
			t.Errorf("target %d = %q, want %q", i, c.targets[i], want[i])
		}
	}
	if !c.saturate {
		t.Error("-rate 0 should mean saturate")
	}

	c, err = parseFlags([]string{"-messages", "50"}, io.Discard)
	if err != nil || c.duration != c.deadline {
		t.Errorf("-messages without -duration: duration=%v err=%v", c.duration, err)
	}

	for _, args := range [][]string{
		{"-host", "10.1.2.3"},
		{"-urls", "ws://example.com:6001"},
		{"-urls", "wss://127.0.0.1:6001"},
		{"-subscribers", "0"},
		{"-channels", "5", "-subscribers", "2"},
		{"-rate", "-1"},
	} {
		if _, err := parseFlags(args, io.Discard); !isUsage(err) {
			t.Errorf("parseFlags(%v) = %v, want usage error", args, err)
		}
	}
}
