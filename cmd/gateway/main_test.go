package main

import (
	"os"
	"testing"
)

// TestMain removes what the tests share for the whole test binary: the
// throwaway keys (testKeys) and the built gateway (buildGateway).
func TestMain(m *testing.M) {
	code := m.Run()
	for _, dir := range []string{keysDir, binDir} {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}
