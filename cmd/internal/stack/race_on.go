//go:build race

package stack

// raceBuild: this program was built with the race detector.
const raceBuild = true
