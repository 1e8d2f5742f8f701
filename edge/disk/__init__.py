"""The bottom of the house: private files opened without following links, the data
folder's layout, its lock, and the files a user asks to be written."""
