package main

import (
	"strings"
	"testing"

	"paygateway/gateway"
)

// TestRedisInstancesSetting: redis.instances defaults to 1, is set by
// GATEWAY_REDIS_INSTANCES, must be at least 1, and reaches the limiter.
func TestRedisInstancesSetting(t *testing.T) {
	shipped, err := Load("../../configs/gateway.yaml")
	if err != nil || shipped.Redis.Instances != 1 || DefaultConfig().Redis.Instances != 1 {
		t.Fatalf("default redis.instances: shipped %d (%v), built-in %d, want 1", shipped.Redis.Instances, err, DefaultConfig().Redis.Instances)
	}
	t.Setenv("GATEWAY_REDIS_INSTANCES", "3")
	cfg, err := Load("")
	if err != nil || cfg.Redis.Instances != 3 {
		t.Fatalf("GATEWAY_REDIS_INSTANCES=3: %d %v", cfg.Redis.Instances, err)
	}
	cfg.WechatPay.MchID, cfg.WechatPay.AppID = "1", "wx"
	cfg.WechatPay.APIv3Key = strings.Repeat("a", 32)
	cfg.WechatPay.PublicKeyFile, cfg.WechatPay.PublicKeyID = "/k", "PUB_KEY_ID_1"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	cfg.Redis.Instances = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "GATEWAY_REDIS_INSTANCES") {
		t.Fatalf("redis.instances 0: %v, want refused naming GATEWAY_REDIS_INSTANCES", err)
	}
	cfg.Redis.Instances, cfg.Redis.Addr = 3, "127.0.0.1:1" // guards does not dial
	m := &Main{Config: cfg, Metrics: gateway.NewMetrics(), limiter: gateway.NewMemoryLimiter()}
	t.Cleanup(func() { m.Close() })
	if _, _, err := m.guards(); err != nil {
		t.Fatal(err)
	}
	if f, ok := m.limiter.(gateway.FallbackLimiter); !ok || f.Instances != 3 {
		t.Fatalf("limiter %#v, want a FallbackLimiter with Instances 3", m.limiter)
	}
}
