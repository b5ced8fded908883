package events_test

import (
	"context"
	"log"

	"github.com/jmoiron/sqlx"
	"go.uber.org/zap"

	"github.com/geoframework/geo/events"
)

// On the primary, the application publishes in its own transaction.
func ExamplePublisher_Publish() {
	ctx := context.Background()
	db := sqlx.MustOpen("postgres", "postgres://app@primary/app")
	pub, err := events.NewPublisher([]string{"package_file"})
	if err != nil {
		log.Fatal(err)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback()
	var id int64
	if err := tx.GetContext(ctx, &id, `INSERT INTO package_files (path) VALUES ($1) RETURNING id`, "p/1.tgz"); err != nil {
		log.Fatal(err)
	}
	pos, err := pub.Publish(ctx, tx, "package_file", events.OpCreated, id, "p/1.tgz")
	if err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	// Once committed, pos is what a secondary's consumer must reach for
	// this write to be handled there; hand it to the client, for example
	// in the events.PositionHeader of the response.
	log.Printf("%s: %s", events.PositionHeader, pos)
}

// On a secondary, the consumer reads the outbox from a hot standby of the
// primary and marks registry rows pending.
func ExampleConsumer_Run() {
	ctx := context.Background()
	standby := sqlx.MustOpen("postgres", "postgres://geo@standby/app")
	tracking := sqlx.MustOpen("postgres", "postgres://geo@localhost/geo_tracking")
	known := map[string]bool{"package_file": true}
	c, err := events.NewConsumer(events.ConsumerConfig{
		Source:   standby,
		Tracking: tracking,
		Known:    func(name string) bool { return known[name] },
		Handler: events.HandlerFunc(func(ctx context.Context, batch []events.Event) error {
			// Idempotent: mark each (Replicable, ModelID) pending, in one statement.
			return nil
		}),
		NotifyURL:    "postgres://geo@primary/app", // optional wake-up hint
		OnFellBehind: func(ctx context.Context) { /* start a full consistency pass */ },
		Logger:       zap.NewExample(),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
