// Command wxpaysim runs the WeChat Pay API v3 simulator for local development.
// It keeps its dev/test keys in --keys (generated on first start) and signs
// notifications it POSTs to the gateway.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"paygateway/gateway/wechatpay/wxpaysim"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "wxpaysim:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return wxpaysim.Run(ctx, cfg)
}

// parseFlags builds the simulator config from the command line.
func parseFlags(args []string) (wxpaysim.Config, error) {
	cfg := wxpaysim.DefaultConfig()
	fs := flag.NewFlagSet("wxpaysim", flag.ContinueOnError)
	fs.StringVar(&cfg.KeysDir, "keys", cfg.KeysDir, "directory holding (or receiving) the simulator's dev keys")
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address")
	fs.StringVar(&cfg.NotifyURL, "notify-url", cfg.NotifyURL, "payment notification URL")
	fs.StringVar(&cfg.RefundNotifyURL, "refund-notify-url", cfg.RefundNotifyURL, "default refund notification URL")
	fs.StringVar(&cfg.MchID, "mchid", cfg.MchID, "merchant id used when generating keys")
	fs.StringVar(&cfg.AppID, "appid", cfg.AppID, "app id used when generating keys")
	fs.DurationVar(&cfg.RefundSettleDelay, "refund-settle-delay", cfg.RefundSettleDelay, "time a refund stays PROCESSING (<0: settle via POST /sim/refunds/settle)")
	fs.DurationVar(&cfg.RefundGap, "refund-gap", cfg.RefundGap,
		"least time between refund applications of one order, as WeChat Pay's minute; sooner is answered 429 FREQUENCY_LIMITED (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	return cfg, nil
}
