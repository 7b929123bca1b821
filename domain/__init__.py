"""The task decider: commands, events, state, `decide` and `evolve`. Pure: no I/O, no clock."""
