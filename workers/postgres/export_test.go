package postgres

import (
	"context"

	"github.com/syvault/syvault/workers/driver"
)

// PlansKept returns the statements for which an idle admin session of d's pool for c and
// database holds a plan made for all calls (a generic plan) although they take
// parameters. (A statement without any has only that one plan.)
func PlansKept(ctx context.Context, d *Driver, c driver.Conn, database string) ([]string, error) {
	p, err := d.pool(c, database)
	if err != nil {
		return nil, err
	}
	var kept []string
	for _, conn := range p.AcquireAllIdle(ctx) {
		rows, err := conn.Query(ctx, "SELECT statement FROM pg_catalog.pg_prepared_statements WHERE generic_plans > 0 AND pg_catalog.cardinality(parameter_types) > 0")
		if err == nil {
			for rows.Next() {
				var stmt string
				if err = rows.Scan(&stmt); err != nil {
					break
				}
				kept = append(kept, stmt)
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
		conn.Release()
		if err != nil {
			return nil, err
		}
	}
	return kept, nil
}
