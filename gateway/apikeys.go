package gateway

import (
	"context"

	"paygateway/ledger"
)

// DBKeys are API keys created with `gateway apikey create`, looked up in
// the ledger database by hash; a revoked key stops working at once, or
// within RecentKeyTTL while a flood fills the key checks (LimitLookups).
type DBKeys struct{ Usage *ledger.KeyUsage }

var _ KeyLookup = DBKeys{}

// LookupAPIKey implements KeyLookup and records the key's last use.
func (k DBKeys) LookupAPIKey(ctx context.Context, h string) (Principal, bool, error) {
	key, ok, err := k.Usage.Lookup(ctx, h)
	if err != nil || !ok {
		return Principal{}, false, err
	}
	return Principal{Name: key.Name, Role: Role(key.Role)}, true, nil
}
