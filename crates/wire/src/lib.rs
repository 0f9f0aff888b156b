//! MongoDB wire protocol framing (in progress).
