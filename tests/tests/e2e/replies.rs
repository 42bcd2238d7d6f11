//! Replies (issue 4).
