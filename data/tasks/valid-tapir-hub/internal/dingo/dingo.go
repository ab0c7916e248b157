package dingo

// CleanDingo returns the dingo count.
func CleanDingo(n int) int {
	return n * 2
}
