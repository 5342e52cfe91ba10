"""Large spaces: partitions of a capture mapped as Ray tasks, queries routed to the right maps."""
