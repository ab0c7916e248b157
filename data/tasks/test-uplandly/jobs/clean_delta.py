"""Print the delta summary."""

ITEMS = ['yucca', 'verbena', 'hickory']


def main():
    for item in ITEMS:
        print(item, len(item))
    print('total', len(ITEMS))


if __name__ == "__main__":
    main()
