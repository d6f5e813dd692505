package redisstore_test

import (
	"context"
	"fmt"
	"testing"

	"paygateway/gateway/redisstore"
	"paygateway/gateway/redisstore/redistest"
)

// TestDeletePrefixRemovesOnlyItsKeys writes 2,500 keys under a prefix
// holding glob characters, beside keys that the unescaped prefix would
// match and other keys under the test's prefix, and checks that exactly
// the 2,500 go.
func TestDeletePrefixRemovesOnlyItsKeys(t *testing.T) {
	cfg := redistest.Config(t)
	c := redisstore.NewClient(cfg)
	defer c.Close()
	ctx := context.Background()
	mine := cfg.Prefix + "a*[x]:"
	keep := []string{cfg.Prefix + "ab[x]:1", cfg.Prefix + "a*x:1", cfg.Prefix + "b:1"}
	pipe := c.Pipeline()
	for i := range 2500 {
		pipe.Set(ctx, fmt.Sprintf("%s%d", mine, i), "v", 0)
	}
	for _, k := range keep {
		pipe.Set(ctx, k, "v", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := redisstore.DeletePrefix(ctx, c, mine)
	if err != nil || n != 2500 {
		t.Fatalf("DeletePrefix = %d, %v; want 2500, nil", n, err)
	}
	if left, _ := c.Keys(ctx, cfg.Prefix+"*").Result(); len(left) != len(keep) {
		t.Fatalf("keys left under the test prefix: %v, want exactly %v", left, keep)
	}
	if _, err := redisstore.DeletePrefix(ctx, c, ""); err == nil {
		t.Fatal("an empty prefix (every key) was accepted")
	}
}
