"""quickstart-app: a Flower app in the shape of Flower's quickstart-pytorch."""
