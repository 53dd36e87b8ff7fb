"""MONAILabelReviewer's REST client, copied unchanged from Project-MONAI/MONAILabel
(plugins/slicer/MONAILabelReviewer/MONAILabelReviewerLib/MonaiServerREST.py at 058ddfc4, Apache-2.0), so the tests send
exactly the requests the Slicer module sends."""
