// Package chaos runs SyVault as it runs in production (real binaries: a three-node NATS
// JetStream cluster, API and worker processes apart, private PostgreSQL and MariaDB
// servers behind TCP proxies) under a bounded lease load, injects faults at seeded random
// moments (kill -9 of any SyVault process or of one NATS node, a database frozen with
// SIGSTOP, a database connection cut mid-statement), and then checks the promises the
// README makes against the databases themselves and the event stream: no lost
// revocation, no leaked user, no user outliving its expiry, clean errors, no panic, and
// projections that a replay of the stream reproduces.
//
// Faults at chosen points are what the other tests cover; this package exists for the
// points nobody thought to choose. A run prints its seed first: the same seed replays the
// same sequence of fault kinds, targets and pauses (the load's timing still varies with
// the machine).
//
// Every process the harness starts runs in its own process group with a parent-death
// signal, and Harness.Close kills the groups and removes the temporary directories, so a
// failed or interrupted run leaves nothing behind. The shared PostgreSQL (5432) and
// MariaDB (3306) are never touched: SIGSTOP must only ever freeze servers of the run's own.
package chaos
