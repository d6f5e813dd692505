package ledger

import (
	"context"
	"log/slog"

	"gorm.io/gorm"

	"paygateway/migrations"
)

// Migrate applies every pending migration.
func Migrate(ctx context.Context, db *gorm.DB, d migrations.Dialect) error {
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	if err := migrations.Apply(ctx, sqlDB, d); err != nil {
		return err
	}
	slog.Debug("migrations applied", "dialect", d)
	return nil
}
