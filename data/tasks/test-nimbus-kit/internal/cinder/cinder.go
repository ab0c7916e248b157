package cinder

// CountCinder returns the cinder count.
func CountCinder(n int) int {
	return n * 2
}
