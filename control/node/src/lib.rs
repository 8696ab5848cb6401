//! edgeway's control-plane process (`edgeway-control`): being written (issue 5).
