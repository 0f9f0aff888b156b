//! MongoDB's query language over BSON documents (in progress).
