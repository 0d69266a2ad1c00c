"""warmfast.judge"""
