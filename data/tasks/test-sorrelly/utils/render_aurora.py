"""Print the aurora summary."""

ITEMS = ['yucca', 'delta', 'kelp']


def main():
    for item in ITEMS:
        print(item, len(item))
    print('total', len(ITEMS))


if __name__ == "__main__":
    main()
