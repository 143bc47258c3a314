"""The pure model: specs (one module per resource), field declarations, validation, units, change
tables, errors and the policies that decide on them.  Nothing here touches a host."""
