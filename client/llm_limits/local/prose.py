"""Realistic Russian and English prose for the demo, the benchmark and the tests.

The bot and the festival parser send Russian pages: announcements, programmes, reviews. Token
counts of such text differ from those of English or of random letters (Gemma 3 makes about 3.75
characters per token in Russian, 4.4 in English), so loads and tests that are about tokens use
these paragraphs. ``page`` strings them together, in a seeded order with the names, dates and
numbers varied, into a page of a wanted length.
"""

from __future__ import annotations

import random

RUSSIAN = (
    "В эту субботу в старом речном порту открывается фестиваль уличной еды и музыки. "
    "Организаторы обещают больше сорока павильонов: от грузинских хинкали и узбекского плова "
    "до вегетарианских бургеров и домашнего мороженого с облепихой. Вход свободный, но на "
    "концертную площадку у маяка пускают по браслетам, которые раздают у главных ворот с "
    "полудня. Начало в 12:00, последние выступления заканчиваются к одиннадцати вечера.",
    "Главная сцена в этом году посвящена джазу. В пятницу выступит квартет пианистки Анны "
    "Соколовой, который только что вернулся из гастролей по Скандинавии, а в воскресенье "
    "вечером зрителей ждёт большой бэнд городской филармонии с программой по мотивам музыки "
    "из советских кинофильмов. Перед каждым концертом музыканты проведут открытую репетицию, "
    "где можно задать вопросы и посмотреть, как рождается аранжировка.",
    "Для семей с детьми на набережной построят отдельный городок. Там будут мастер-классы по "
    "гончарному делу и росписи пряников, кукольный театр и научное шоу с жидким азотом. "
    "Волонтёры напоминают, что коляски удобнее оставлять у северного входа: на центральной "
    "аллее в часы пик бывает тесно. Потерявшихся детей приводят к информационному шатру "
    "рядом с колесом обозрения, там же работает медицинский пункт.",
    "Добраться до порта проще всего на метро: от станции «Речной вокзал» идёт бесплатный "
    "автобус каждые десять минут. Парковка у причалов в дни фестиваля закрыта, а ближайшая "
    "платная стоянка находится в пятнадцати минутах ходьбы. Велосипедистам повезло больше: "
    "у западных ворот поставят охраняемую велопарковку на триста мест, а прокат самокатов "
    "продлит работу до полуночи.",
    "Прошлогодний фестиваль посетили около шестидесяти тысяч человек, и организаторы честно "
    "признают, что к такому наплыву были не готовы: очереди к фудкортам растягивались на "
    "час, а связь на набережной пропадала. В этот раз площадь увеличили почти вдвое, "
    "добавили зоны отдыха с навесами и договорились с операторами о временных вышках. "
    "Оплатить покупки можно будет и картой, и по QR-коду.",
    "Отдельная программа подготовлена для любителей литературы. В шатре у библиотеки пройдут "
    "чтения молодых поэтов, встреча с автором нашумевшего романа о жизни северного посёлка и "
    "дискуссия о том, как изменилось чтение в эпоху коротких видео. Модератор обещает, что "
    "вопросы из зала будут принимать до последней минуты, а книги участников можно купить "
    "прямо на месте со скидкой.",
    "Погода, по прогнозу синоптиков, не подведёт: днём до двадцати четырёх градусов, ветер "
    "слабый, осадков не ожидается. Тем не менее организаторы советуют взять с собой головной "
    "убор и воду: у реки солнце ощущается сильнее. Пункты с питьевой водой расставлены по "
    "всей территории, бутылку можно наполнить бесплатно. Курить разрешено только в "
    "специально отведённых местах.",
    "Вечером в субботу над рекой покажут световое шоу. Дроны выстроят в небе силуэты "
    "городских мостов и старинных кораблей, а музыку к представлению написал молодой "
    "композитор из местной консерватории. Лучшие места для просмотра — на ступенях "
    "амфитеатра и на пешеходном мосту, но полиция предупреждает, что мост закроют, если на "
    "нём соберётся слишком много людей.",
    "Для участников ярмарки мастеров действуют новые правила. Заявки принимаются до "
    "четверга, каждый участник получает место под навесом, розетку и два стула. Продавать "
    "алкоголь и пиротехнику запрещено, а упаковка должна быть перерабатываемой: за этим "
    "будут следить экологи из городского центра раздельного сбора. Победителей конкурса "
    "«Лучшая лавка» выберут сами посетители голосованием в приложении.",
    "Фестиваль завершится в воскресенье большим общим концертом. На сцену выйдут все "
    "коллективы, выступавшие за три дня, и вместе исполнят песню, которую специально для "
    "праздника сочинили школьники из кружка при доме культуры. После концерта волонтёры "
    "приглашают желающих остаться на час и помочь убрать набережную: каждому участнику "
    "субботника обещают горячий чай и памятный значок.",
)

ENGLISH = (
    "The city council voted on Tuesday to extend the riverside cycle path by another four "
    "miles, linking the old warehouse district with the new university campus. Construction "
    "is expected to begin in early spring and last about eighteen months. Residents raised "
    "concerns about noise and the loss of several mature trees, and the council promised to "
    "plant two new trees for every one removed along the route.",
    "Our reviewer spent a week with the new mid-range phone and came away impressed by the "
    "battery, which comfortably lasted two days of ordinary use. The camera struggles in low "
    "light, and the speaker sounds thin at high volume, but the screen is bright enough to "
    "read in direct sunlight. At this price, it is hard to find a better all-rounder, though "
    "buyers who care about photography should look elsewhere.",
    "Preheat the oven to 180 degrees. Whisk the eggs with the sugar until pale and fluffy, "
    "then fold in the flour, a pinch of salt and the melted butter. Pour the batter into a "
    "lined tin, scatter the sliced apples on top and dust them with cinnamon. Bake for forty "
    "minutes, or until a skewer pushed into the middle comes out clean, and let the cake "
    "cool for at least ten minutes before slicing.",
    "The museum's new wing opens to the public on Saturday with an exhibition of maritime "
    "maps from the sixteenth and seventeenth centuries. Many of them have never been shown "
    "before, having spent decades in private collections. Curators spent three years "
    "restoring the most fragile sheets, and visitors can follow that work through a series "
    "of short films screened in the gallery next to the main hall.",
    "Support for the older version of the library will end in March. Users are encouraged to "
    "upgrade as soon as possible: the new release fixes a memory leak in the connection "
    "pool, speeds up large queries by roughly a third and adds type hints to every public "
    "function. A migration guide covers the handful of breaking changes, most of which only "
    "affect code that relied on undocumented behaviour.",
)

_CITIES = ("Казани", "Самаре", "Перми", "Твери", "Ярославле", "Калуге", "Томске", "Вологде")
_TOWNS = ("Leeds", "Bristol", "Norwich", "York", "Exeter", "Bath", "Derby", "Oxford")


def page(chars: int, *, language: str = "ru", seed: int = 0) -> str:
    """A page of at least ``chars`` characters of prose, the same for the same arguments."""
    rng = random.Random(f"{language}:{seed}:{chars}")
    paragraphs = RUSSIAN if language == "ru" else ENGLISH
    places = _CITIES if language == "ru" else _TOWNS
    out: list[str] = []
    size = 0
    while size < chars:
        order = list(paragraphs)
        rng.shuffle(order)
        for text in order:
            # A dated, placed heading per paragraph, so a page never repeats itself verbatim.
            day, month = rng.randint(1, 28), rng.randint(1, 12)
            place = rng.choice(places)
            heading = (
                f"{day:02d}.{month:02d}. Новости о {place}, выпуск {rng.randint(2, 999)}."
                if language == "ru"
                else f"{day:02d}/{month:02d}. News from {place}, issue {rng.randint(2, 999)}."
            )
            out.append(f"{heading}\n{text}")
            size += len(out[-1]) + 2
            if size >= chars:
                break
    return "\n\n".join(out)
