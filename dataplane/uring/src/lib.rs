//! edgeway-uring (being written).
