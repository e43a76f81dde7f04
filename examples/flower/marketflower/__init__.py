"""marketflower: a Flower app (8x8 digits, an MLP) that is also a market project."""
