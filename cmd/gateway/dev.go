package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// devDir holds everything `gateway dev` creates: keys, SQLite file, API keys.
const devDir = ".run"

// devInventoryAddr is where `gateway dev` serves the inventory simulator.
const devInventoryAddr = "127.0.0.1:8082"

// dev runs the gateway on SQLite with the WeChat Pay and inventory
// simulators in the same process: nothing to install, Ctrl-C stops all.
func dev(ctx context.Context, args []string) error {
	if len(args) > 0 { // `gateway dev --config prod.yaml` would run on the dev config, the file ignored
		return fmt.Errorf("gateway dev takes no arguments (got %s): it runs on its own config, GATEWAY_* variables "+
			"applied; a config file is for `gateway serve --config FILE`", strings.Join(args, " "))
	}
	setupLogging(LogConfig{Level: "info"})
	simCfg := wxpaysim.DefaultConfig()
	keys, err := wxpaysim.LoadOrGenerateKeys(simCfg.KeysDir, simCfg.MchID, simCfg.AppID)
	if err != nil {
		return err
	}
	warnUnknownEnv()
	cfg, err := devConfig(keys)
	if err != nil {
		return err
	}
	setupLogging(cfg.Log) // GATEWAY_LOG_LEVEL applied
	sim, err := wxpaysim.Start(devSimConfig(cfg))
	if err != nil {
		return err
	}
	defer shutdownSim(sim)
	invAddr := devInventoryAddr
	go func() {
		if err := inventorysim.Run(ctx, invAddr, inventorysim.New()); err != nil && !errors.Is(err, context.Canceled) {
			slog.Error("inventory simulator stopped", "err", err)
		}
	}()
	applyRuntime(cfg.Runtime)
	m, err := NewMain(ctx, cfg)
	if err != nil {
		return err
	}
	defer m.Close()
	slog.Info("dev stack up", "gateway", m.URL(), "wxpaysim", sim.URL, "inventorysim", "http://"+invAddr,
		"api_keys_file", filepath.Join(devDir, "dev-api-keys.txt"))
	return m.Run(ctx)
}

// devSimConfig is the WeChat Pay simulator's config: it notifies the
// gateway where cfg has it listen (GATEWAY_HTTP_ADDR may name another
// loopback port than the default 127.0.0.1:8080).
func devSimConfig(cfg Config) wxpaysim.Config {
	c := wxpaysim.DefaultConfig()
	c.NotifyURL = "http://" + cfg.HTTP.Addr + "/v1/wechatpay/notify/payment"
	c.RefundNotifyURL = cfg.WechatPay.RefundNotifyURL
	return c
}

func shutdownSim(s *wxpaysim.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
}

// devConfig points the gateway at the simulator's keys; GATEWAY_* variables
// still override any field.
func devConfig(k *wxpaysim.Keys) (Config, error) {
	cfg := DefaultConfig()
	cfg.HTTP.Addr = "127.0.0.1:8080"
	cfg.Database.DSN = filepath.Join(devDir, "gateway.db")
	keysDir := wxpaysim.DefaultConfig().KeysDir
	w := &cfg.WechatPay
	w.MchID, w.AppID, w.APIv3Key = k.MchID, k.AppID, k.APIv3Key
	w.PublicKeyFile, w.PublicKeyID = filepath.Join(keysDir, "platform_public_key.pem"), k.PublicKeyID
	w.MerchantSerial, w.MerchantPrivateKeyFile = k.MerchantSerial, filepath.Join(keysDir, "merchant_private_key.pem")
	w.BaseURL = "http://127.0.0.1:8081"
	cfg.Inventory.BaseURL = "http://" + devInventoryAddr
	cfg.Compensation.Interval, cfg.Compensation.SafetyBuffer = 10*time.Second, 30*time.Second
	keys, err := devAPIKeys()
	if err != nil {
		return cfg, err
	}
	cfg.Auth.APIKeys = keys
	if cfg.Refunds.JWT.HS256SecretFile, err = devJWTSecret(); err != nil {
		return cfg, err
	}
	cfg.Refunds.JWT.Audience = devAudience
	if err := applyEnv(reflect.ValueOf(&cfg).Elem(), "GATEWAY", os.LookupEnv); err != nil {
		return cfg, err
	}
	if w.RefundNotifyURL == "" { // where the gateway listens, GATEWAY_HTTP_ADDR applied
		w.RefundNotifyURL = "http://" + cfg.HTTP.Addr + "/v1/wechatpay/notify/refund"
	}
	return cfg, devOnly(cfg)
}

// devOnly refuses GATEWAY_* overrides that would take `gateway dev` out of
// its sandbox. Another database may be a real ledger: its outbox would
// send real stock jobs to the simulator and mark them done, its
// compensation would close real orders the simulator never saw, and
// /sim/pay would pay them. Another inventory would have stock confirmed
// for simulated payments. And its dev keys and JWT secret lie in plain
// files: it listens on loopback only.
func devOnly(cfg Config) error {
	switch {
	case cfg.Database.DSN != filepath.Join(devDir, "gateway.db"):
		return errors.New("gateway dev runs the simulators on its own SQLite file " + filepath.Join(devDir, "gateway.db") +
			": unset GATEWAY_DATABASE_DSN (another database may be a real ledger)")
	case !loopbackAddr(cfg.HTTP.Addr):
		return errors.New("gateway dev listens on loopback only (its keys are in plain files): unset GATEWAY_HTTP_ADDR")
	case !localURL(cfg.WechatPay.BaseURL) || !localURL(cfg.Inventory.BaseURL):
		return errors.New("gateway dev talks to its own simulators only: unset GATEWAY_WECHATPAY_BASE_URL and GATEWAY_INVENTORY_BASE_URL")
	case cfg.Redis.Addr != "" && !loopbackAddr(cfg.Redis.Addr):
		// Its lockout counts, gate marks and locks would land in a shared
		// Redis under the default prefix.
		return errors.New("gateway dev uses no Redis, or one on this host: unset GATEWAY_REDIS_ADDR")
	case cfg.HTTP.MetricsAddr != "" && !loopbackAddr(cfg.HTTP.MetricsAddr):
		return errors.New("gateway dev serves /metrics on loopback only: unset GATEWAY_HTTP_METRICS_ADDR")
	case cfg.HTTP.NotifyAddr != "" && !loopbackAddr(cfg.HTTP.NotifyAddr):
		return errors.New("gateway dev listens on loopback only: unset GATEWAY_HTTP_NOTIFY_ADDR")
	}
	return nil
}

// localURL: an http(s) URL to a loopback host.
func localURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && loopbackAddr(u.Hostname())
}

// devAPIKeys makes one key per role on first start and keeps them in
// .run/dev-api-keys.txt (plain text: local development only).
func devAPIKeys() ([]string, error) {
	path := filepath.Join(devDir, "dev-api-keys.txt")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var lines []string
		for _, role := range []string{"finance", "ops", "service", "metrics"} {
			lines = append(lines, fmt.Sprintf("%s=dev-%s-%s", role, role, gateway.NewToken()))
		}
		b = []byte(strings.Join(lines, "\n") + "\n")
		if err := os.MkdirAll(devDir, 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var specs []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		role, key, ok := strings.Cut(line, "=")
		if ok {
			specs = append(specs, "dev-"+role+":"+role+":"+gateway.HashKey(key))
		}
	}
	return specs, nil
}
