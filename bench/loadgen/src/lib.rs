//! edgeway-loadgen (being written).
