package mysql

// SetSQLMode has d's admin sessions run with sql_mode mode, as on a server configured so.
func SetSQLMode(d *Driver, mode string) { d.sqlMode = mode }
