//! black-box tests live in it/
