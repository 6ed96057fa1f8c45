"""Model cards, speed figures, plots and the Hub push of exported students."""
