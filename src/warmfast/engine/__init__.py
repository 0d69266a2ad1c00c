"""warmfast.engine"""
