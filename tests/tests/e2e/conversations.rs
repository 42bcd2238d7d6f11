//! Conversations (issue 3).
