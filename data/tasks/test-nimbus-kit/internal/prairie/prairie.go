package prairie

// ParsePrairie returns the prairie count.
func ParsePrairie(n int) int {
	return n * 2
}
