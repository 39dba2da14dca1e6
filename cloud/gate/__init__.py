"""Community gates on the cloud side: residents, faces, plates, visitor requests, sync to gateways."""
