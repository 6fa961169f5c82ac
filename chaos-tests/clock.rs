//! Scenario 6: the wall clock steps ±1 h while vigil records.
