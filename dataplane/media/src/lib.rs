//! edgeway-media (being written).
