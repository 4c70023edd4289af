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

	c, err = parseFlags([]string{"-urls", "127.0.0.1:1,127.0.0.2:2,127.0.0.3:3", "-publish-urls", "127.0.0.1:1", "-publishers", "2"}, io.Discard)
	if err != nil || len(c.pubTargets) != 1 || c.pubTargets[0] != "127.0.0.1:1" || c.publishers != 2 {
		t.Errorf("-publish-urls: %+v, %v", c, err)
	}
	c, err = parseFlags([]string{"-urls", "127.0.0.1:1,127.0.0.2:2,127.0.0.3:3", "-publishers", "4", "-presence-churn", "50"}, io.Discard)
	if err != nil || c.publishers != 6 || c.presencePool()%3 != 0 || c.presencePool() < 100 {
		t.Errorf("publishers %d, presence pool %d, %v", c.publishers, c.presencePool(), err)
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
		{"-publish-urls", "ws://10.0.0.1:6001"},
		{"-presence-churn", "-1"},
		{"-presence-churn", "5", "-idle"},
		{"-presence-churn", "5", "-presence-channel", "private-x"},
		{"-presence-churn", "5", "-presence-observers", "0"},
	} {
		if _, err := parseFlags(args, io.Discard); !isUsage(err) {
			t.Errorf("parseFlags(%v) = %v, want usage error", args, err)
		}
	}
}
