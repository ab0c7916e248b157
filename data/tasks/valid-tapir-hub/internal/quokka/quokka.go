package quokka

// FetchQuokka returns the quokka count.
func FetchQuokka(n int) int {
	return n * 2
}
