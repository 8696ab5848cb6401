//! edgeway-flowtable (being written).
