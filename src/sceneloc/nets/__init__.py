"""Neural networks: frozen pretrained encoders, the regression heads and networks, their losses."""
