"""Looking at the data: the FiftyOne dataset and its database, the Label Studio review roundtrip, similarity search."""
