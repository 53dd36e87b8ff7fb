"""The REST layer served by uvicorn: MONAI Label's endpoints, with ours in front where stock ones fall short."""
