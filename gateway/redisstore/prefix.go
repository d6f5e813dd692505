package redisstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// DeletePrefix removes every key that starts with prefix and returns how
// many it removed. It walks the keyspace with SCAN and UNLINKs what it
// finds a page at a time, so a big shared Redis is never blocked the way
// KEYS would block it; keys written under prefix while it runs may stay.
// Tools and tests use it to leave nothing behind on a shared server.
func DeletePrefix(ctx context.Context, c redis.UniversalClient, prefix string) (int, error) {
	if prefix == "" {
		return 0, fmt.Errorf("delete keys by prefix: the prefix is empty")
	}
	match := globEscape(prefix) + "*"
	removed := 0
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, match, scanPage).Result()
		if err != nil {
			return removed, fmt.Errorf("scan keys under %q: %w", prefix, err)
		}
		if len(keys) > 0 {
			n, err := c.Unlink(ctx, keys...).Result()
			removed += int(n)
			if err != nil {
				return removed, fmt.Errorf("unlink %d keys under %q: %w", len(keys), prefix, err)
			}
		}
		if cursor = next; cursor == 0 {
			return removed, nil
		}
	}
}

// scanPage is how many keys one SCAN call looks at: a few milliseconds of
// Redis's time, so that a keyspace of a million keys takes a hundred
// short calls rather than one long one.
const scanPage = 10000

// globEscape makes s match itself in a Redis glob pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\*?[]^-`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
